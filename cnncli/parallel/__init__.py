"""The speed boundary: work split over threads and processes.

Must not import NumPy at package level: ``cnncli.parallel.threads`` sets BLAS threads before
NumPy loads.
"""
