"""Bundled and system datasets: the 2-D toy, Fashion-MNIST from its Debian package, long-tailed pools."""
