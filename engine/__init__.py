"""judgefree.engine"""
