"""Triton kernels, one module per op family (installed as sparkle_fast.kernels).

Modules here import triton; this package does not, so `import sparkle_fast` works where triton is missing.
Kernels take contiguous torch tensors and are called by sparkle_fast.ops, which validates inputs first. Under
TRITON_INTERPRET=1 (set before triton is imported) they run on CPU tensors, which is how CI tests them.
"""
