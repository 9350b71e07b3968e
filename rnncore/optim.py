"""Optimizers: SGD, Adam, RMSprop, and clip_grad_norm."""
