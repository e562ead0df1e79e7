"""judgefree.curate"""
