"""Speed and memory benchmarks: ``python -m stytr.benchmarks.<name>`` prints measurements and ratios."""
