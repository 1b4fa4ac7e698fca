"""PyTorch's values for crank's activations and losses, forward and backward, in float64.

Prints the Rust constants of tests/integration/torch_reference.rs:

    python3 tests/python/activation_loss_reference.py

Activations: y = f(Z) and the gradient of sum(y * G) with respect to Z (the backward pass with
upstream gradient G). Losses: the mean loss of a batch of outputs Y against targets, and its
gradient with respect to Y times the batch size (crank's losses hand layers the per-sample
gradient, `dℓᵢ/dyᵢ`, and PyTorch's mean reduction divides it by B).
"""
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
B, K = 3, 5
Z = torch.tensor([[(-5.5 + 0.73 * (i * K + j)) * (1 if (i + j) % 3 else -1) for j in range(K)]
                  for i in range(B)])
G = torch.tensor([[0.3 - 0.17 * (i * K + j) + 0.05 * (j * j) for j in range(K)] for i in range(B)])
ACTIVATIONS = {
    "Identity": lambda z: z,
    "ReLU": F.relu,
    "LeakyReLU": lambda z: F.leaky_relu(z, 0.1),
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "GELU": F.gelu,
    "Softplus": F.softplus,
    "Softmax": lambda z: F.softmax(z, dim=1),
}


def rust(values):
    return "[" + ", ".join(repr(float(v)) for v in values.flatten().tolist()) + "]"


print(f"const Z: [f64; {B * K}] = {rust(Z)};")
print(f"const G: [f64; {B * K}] = {rust(G)};")
print("const ACTIVATIONS: [(&str, [f64; 15], [f64; 15]); 8] = [")
for name, f in ACTIVATIONS.items():
    z = Z.clone().requires_grad_(True)
    y = f(z)
    (y * G).sum().backward()
    print(f'    ("{name}", {rust(y.detach())}, {rust(z.grad)}),')
print("];")

Y = Z / 3.0
CLASSES = [3, 0, 4]
T = torch.tensor([[((i * 7 + j * 3) % 5) / 4.0 for j in range(K)] for i in range(B)])
LOSSES = {
    "MSE": lambda y: F.mse_loss(y, T),
    "BinaryCrossEntropy": lambda y: F.binary_cross_entropy_with_logits(y, T),
    "SoftmaxCrossEntropy": lambda y: F.cross_entropy(y, torch.tensor(CLASSES)),
    "Huber": lambda y: F.huber_loss(y, T, delta=0.5),
}
print(f"const Y: [f64; {B * K}] = {rust(Y)};")
print(f"const T: [f64; {B * K}] = {rust(T)};")
print(f"const CLASSES: [usize; {B}] = {CLASSES};")
print("const LOSSES: [(&str, f64, [f64; 15]); 4] = [")
for name, f in LOSSES.items():
    y = Y.clone().requires_grad_(True)
    loss = f(y)
    loss.backward()
    print(f'    ("{name}", {loss.item()!r}, {rust(y.grad * B)}),')
print("];")
print(f"// torch {torch.__version__}")
