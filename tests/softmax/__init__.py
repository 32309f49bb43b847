"""softmax and softmax_grad."""
