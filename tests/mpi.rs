//! Data-parallel training under `mpirun` (Cargo feature `mpi`): the `crank` command on 2 and 3
//! ranks against one process, reproducibility, a bad file on one rank, and a rank killed
//! mid-training. Needs Open MPI's `mpirun` (`apt-get install openmpi-bin`); `.ci/run` installs it
//! and runs `cargo test --features mpi --test mpi`.
#![cfg(feature = "mpi")]

use crank::Sequential;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("mpi")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn root(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// `mpirun -np <ranks> --oversubscribe`, allowed to run as root (CI's containers are root).
fn mpirun(ranks: usize) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .args(["-np", &ranks.to_string(), "--oversubscribe"]);
    cmd
}

/// The arguments of `crank train` on the digits data for `epochs` epochs, saving into `dir`.
fn train_args(dir: &Path, out: &str, epochs: usize) -> Vec<String> {
    [
        "train",
        root("examples/digits.yaml").to_str().unwrap(),
        "--data",
        root("data/digits.csv").to_str().unwrap(),
        "--out",
        dir.join(out).to_str().unwrap(),
        "--epochs",
        &epochs.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// The arguments of `crank resume` from `ckpt` with the model file `config` for `epochs` more
/// epochs on the digits data, saving `out`.
fn resume_args(ckpt: &Path, config: &Path, out: &Path, epochs: usize) -> Vec<String> {
    [
        "resume",
        ckpt.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--data",
        root("data/digits.csv").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        &epochs.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// The largest relative difference between two models' weights (relative to 1e-2 at least).
fn worst_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs() / a.abs().max(b.abs()).max(1e-2))
        .fold(0.0, f32::max)
}

fn crank() -> &'static str {
    env!("CARGO_BIN_EXE_crank")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .expect("mpirun runs (apt-get install openmpi-bin)")
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every weight of a saved model, as f32.
fn weights(path: &Path) -> Vec<f32> {
    let mut m = Sequential::<f32>::load(path).unwrap();
    let mut out = Vec::new();
    m.visit_params(|_, p| out.extend_from_slice(p.value));
    out
}

/// 2 ranks and 3 ranks (an odd split of every batch of 32) train what one process trains, to
/// rounding; rank 0 alone prints and saves; the same run twice gives the same bytes.
#[test]
fn ranks_train_what_one_process_trains() {
    let d = dir("same");
    ok(Command::new(crank()).args(train_args(&d, "one.crank", 4)));
    let one = weights(&d.join("one.crank"));
    for ranks in [2, 3] {
        let out =
            ok(mpirun(ranks)
                .arg(crank())
                .args(train_args(&d, &format!("r{ranks}.crank"), 4)));
        assert_eq!(out.matches("trained 4 epochs").count(), 1, "{out}");
        let w = weights(&d.join(format!("r{ranks}.crank")));
        let worst = worst_rel_diff(&w, &one);
        assert!(worst < 1e-3, "{ranks} ranks: {worst}");
    }
    ok(mpirun(2)
        .arg(crank())
        .args(train_args(&d, "again.crank", 4)));
    assert_eq!(
        std::fs::read(d.join("r2.crank")).unwrap(),
        std::fs::read(d.join("again.crank")).unwrap()
    );
}

/// A checkpoint written by 2 ranks resumes on 3 to the model that 5 epochs in one run give (to
/// rounding: the ranks sum in another order).
#[test]
fn a_checkpoint_from_two_ranks_resumes_on_three() {
    let d = dir("resume");
    let ckpt = d.join("c.ckpt");
    ok(mpirun(2)
        .arg(crank())
        .args(train_args(&d, "first.crank", 3))
        .arg("--checkpoint")
        .arg(&ckpt));
    let out = ok(mpirun(3).arg(crank()).args(resume_args(
        &ckpt,
        &root("examples/digits.yaml"),
        &d.join("resumed.crank"),
        2,
    )));
    assert!(out.contains("resumed after epoch 3; trained 2 more epochs (to epoch 5"));
    ok(mpirun(2)
        .arg(crank())
        .args(train_args(&d, "whole.crank", 5)));
    let (a, b) = (
        weights(&d.join("resumed.crank")),
        weights(&d.join("whole.crank")),
    );
    let worst = worst_rel_diff(&a, &b);
    assert!(worst < 1e-3, "{worst}");
}

/// A bad file on one rank ends the job with one message that names the rank, no hang: rank 1
/// reads a file that does not exist, then a file with other samples than rank 0's.
#[test]
fn a_bad_file_on_one_rank_ends_every_rank() {
    let d = dir("bad");
    let short = d.join("short.csv");
    let text = std::fs::read_to_string(root("data/digits.csv")).unwrap();
    let head: Vec<&str> = text.lines().take(1000).collect();
    std::fs::write(&short, head.join("\n") + "\n").unwrap();
    for (rank1_data, want) in [
        (d.join("missing.csv"), "missing.csv"),
        (short.clone(), "rank 1 holds"),
    ] {
        let mut args = train_args(&d, "m.crank", 2);
        let good = args.clone();
        args[3] = rank1_data.to_str().unwrap().to_string();
        // MPMD: rank 0 runs the first command, rank 1 the second.
        let start = Instant::now();
        let out = run(mpirun(1)
            .arg(crank())
            .args(&good)
            .args([":", "-np", "1"])
            .arg(crank())
            .args(&args));
        assert!(!out.status.success());
        assert!(start.elapsed() < Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(ours.len(), 1, "{err}");
        assert!(
            ours[0].starts_with("error: rank 1 of 2: ") && ours[0].contains(want),
            "{err}"
        );
    }
}

/// A rank killed mid-training ends the job with a non-zero exit within a bounded time, and the
/// last checkpoint still loads and resumes.
#[test]
fn a_killed_rank_ends_the_job_and_the_checkpoint_resumes() {
    let d = dir("kill");
    let ckpt = d.join("c.ckpt");
    // The digits model without early stopping, so that the run is still going when killed.
    let config = d.join("digits.yaml");
    let yaml = std::fs::read_to_string(root("examples/digits.yaml")).unwrap();
    let yaml: String = yaml
        .lines()
        .filter(|l| !l.contains("early_stopping"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, yaml).unwrap();
    let mut args = train_args(&d, "m.crank", 100_000);
    args[1] = config.to_str().unwrap().to_string();
    let mut job = mpirun(2)
        .arg(crank())
        .args(&args)
        .arg("--checkpoint")
        .arg(&ckpt)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ckpt.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // The ranks are mpirun's children's (or its own) processes running crank with this `--out`.
    let out_arg = d.join("m.crank");
    let pids = String::from_utf8(
        Command::new("pgrep")
            .args(["-f", &format!("crank train .* --out {}", out_arg.display())])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mpirun_pid = job.id().to_string();
    let pid = pids
        .lines()
        .rfind(|p| *p != mpirun_pid)
        .expect("a rank's process");
    assert!(
        Command::new("kill")
            .args(["-9", pid])
            .status()
            .unwrap()
            .success()
    );
    let killed = Instant::now();
    let status = loop {
        if let Some(s) = job.try_wait().unwrap() {
            break s;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the job still runs a minute after a rank was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let ckpt_model = crank::io::Checkpoint::<f32>::load(&ckpt).unwrap();
    let done = ckpt_model.fit.unwrap().epoch();
    assert!(done >= 1);
    let out =
        ok(mpirun(2)
            .arg(crank())
            .args(resume_args(&ckpt, &config, &d.join("resumed.crank"), 1)));
    assert!(
        out.contains(&format!(
            "resumed after epoch {done}; trained 1 more epochs"
        )),
        "{out}"
    );
}

/// `--data 'shard-{rank}.csv'`: each rank reads a shard of its own. Rank 0's holds the digits 0
/// to 4, rank 1's 5 to 9, so neither knows every class alone: the model's classes and
/// standardisation are those of both shards together, it learns all ten digits, and the same
/// run twice gives the same bytes. A shard missing on one rank is that rank's error.
#[test]
fn ranks_train_on_shards_of_their_own() {
    let d = dir("shards");
    let text = std::fs::read_to_string(root("data/digits.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let label = |row: &str| row.rsplit(',').next().unwrap().parse::<u32>().unwrap();
    for (rank, keep) in [(0, 0..5u32), (1, 5..10)] {
        let shard: Vec<&str> = rows
            .iter()
            .copied()
            .filter(|r| keep.contains(&label(r)))
            .collect();
        let body = std::iter::once(header).chain(shard).collect::<Vec<_>>();
        std::fs::write(d.join(format!("shard-{rank}.csv")), body.join("\n") + "\n").unwrap();
    }
    let args = |out: &str, data: &str| {
        let mut a = train_args(&d, out, 12);
        a[3] = d.join(data).to_str().unwrap().to_string();
        a
    };
    let out = ok(mpirun(2)
        .arg(crank())
        .args(args("a.crank", "shard-{rank}.csv")));
    assert_eq!(out.matches("trained 12 epochs").count(), 1, "{out}");
    let model = Sequential::<f32>::load(d.join("a.crank")).unwrap();
    let pre = model.preprocessing().unwrap();
    let want: Vec<String> = (0..10).map(|c| c.to_string()).collect();
    assert_eq!(pre.classes.as_ref(), Some(&want));
    let all = crank::data::Table::read(root("data/digits.csv"), None).unwrap();
    let scaler = crank::data::Standardizer::fit(all.features.view()).unwrap();
    for (j, (m, s)) in pre.mean.iter().zip(&pre.std).enumerate() {
        assert!(
            (m - scaler.mean[j]).abs() <= 1e-9 * (1.0 + m.abs()),
            "mean {j}"
        );
        assert!(
            (s - scaler.std[j]).abs() <= 1e-9 * (1.0 + s.abs()),
            "std {j}"
        );
    }
    let report = ok(Command::new(crank())
        .arg("evaluate")
        .arg(d.join("a.crank"))
        .arg("--data")
        .arg(root("data/digits.csv"))
        .arg("--json"));
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    let accuracy = v["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.9, "{accuracy}");
    ok(mpirun(2)
        .arg(crank())
        .args(args("b.crank", "shard-{rank}.csv")));
    assert_eq!(
        std::fs::read(d.join("a.crank")).unwrap(),
        std::fs::read(d.join("b.crank")).unwrap()
    );
    let out = run(mpirun(3)
        .arg(crank())
        .args(args("c.crank", "shard-{rank}.csv")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rank 2 of 3") && err.contains("shard-2.csv"),
        "{err}"
    );
}
