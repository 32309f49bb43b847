"""h_softmax, h_softmax_grad, h_softmax_nll and h_softmax_nll_grad."""
