#!/usr/bin/env bash
# Writes the seed inputs of the decoded_model_runs and decode_onnx fuzz targets. For the first:
# spec.yaml's model trained for one epoch on data/digits.csv, saved in each format and as a
# checkpoint, each behind the byte that makes the target read it so (0 JSON, 1 bincode, 2 safetensors, 3 YAML description,
# 4 checkpoint; +128 for f64), and the model quantized to int8 (bincode) and bf16 (JSON). The
# same commit writes the same bytes.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=fuzz/seeds/decoded_model_runs
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
crank() { cargo run --quiet --bin crank -- "$@" >/dev/null; }
crank train fuzz/seeds/spec.yaml --data data/digits.csv --out "$tmp/model.json" \
    --checkpoint "$tmp/model.ckpt"
crank convert "$tmp/model.json" "$tmp/model.crank"
crank convert "$tmp/model.json" "$tmp/model.safetensors"
crank quantize "$tmp/model.json" --precision int8 --out "$tmp/model.int8.crank"
crank quantize "$tmp/model.json" --precision bf16 --out "$tmp/model.bf16.json"
# The description alone: the layers, without the training section.
sed -n '/^training:/q;p' fuzz/seeds/spec.yaml > "$tmp/spec.yaml"
rm -rf "$out"
mkdir -p "$out"
i=0
for file in model.json model.crank model.safetensors spec.yaml model.ckpt; do
    for f64 in 0 128; do
        { printf "\\x$(printf %02x $((i + f64)))"; cat "$tmp/$file"; } > "$out/$file.$((i + f64))"
    done
    i=$((i + 1))
done
for seed in "0 model.bf16.json" "1 model.int8.crank"; do
    set -- $seed
    for f64 in 0 128; do
        { printf "\\x$(printf %02x $(($1 + f64)))"; cat "$tmp/$2"; } > "$out/$2.$(($1 + f64))"
    done
done
ls -l "$out"

# decode_onnx starts from the ONNX files the import is tested on (PyTorch's and skl2onnx's
# exports) and crank's own export of the same model.
onnx=fuzz/seeds/decode_onnx
rm -rf "$onnx"
mkdir -p "$onnx"
cp tests/fixtures/onnx/*.onnx "$onnx/"
crank convert "$tmp/model.json" "$onnx/crank_export.onnx"
ls -l "$onnx"
