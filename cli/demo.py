"""``judgefree demo``: placeholder, replaced below once the kernel exists."""
