"""Per-layer quantities of a snapshot that need no Hessian: spectra of weights and gradients,
weight-gradient alignment, adjacent-layer similarity, activation saturation."""
