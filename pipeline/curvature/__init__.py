"""The curvature engine: local Hessians, loss-Hessian blocks, the Gauss-Newton metric and their spectra.

One module per object, pure tensor-in tensor-out functions; ``engine.py``'s one driver assembles them
into the per-snapshot rows of ``hessian_spectra``, block by block, each block by its strategy (an
MLP's Linear block by its Kronecker form, any other by its parameter group: ``block_engine.py``).
Definitions 1-4 of ../shared/DESIGN.md.
"""
