"""Analysis stages: each reads corpus tables, writes ``analysis_<stage>[_<what>]`` tables and figures."""
