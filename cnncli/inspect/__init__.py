"""Looking at a network: summary, receptive fields, rendering, plots, pictures, benchmarks."""
