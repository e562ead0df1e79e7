"""judgefree.train"""
