"""The curvature engine: local Hessians, loss-Hessian blocks, the Gauss-Newton metric and their spectra.

One module per object, pure tensor-in tensor-out functions; ``engine.py`` assembles them into the
per-snapshot rows of ``hessian_spectra``. Definitions 1-4 of ../shared/DESIGN.md.
"""
