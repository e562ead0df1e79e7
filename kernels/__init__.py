"""judgefree.kernels"""
