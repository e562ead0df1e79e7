"""judgefree.evaluation"""
