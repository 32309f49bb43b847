"""The block-sparse products (sparse_block_gemv/_dot/_outer/_dot_grad) and the paths of their CPU kernels."""
