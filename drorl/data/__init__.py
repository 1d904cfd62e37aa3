"""Offline datasets: the Dataset type, HDF5 and Minari I/O, generation, named datasets."""
