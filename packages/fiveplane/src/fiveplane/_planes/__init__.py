"""Planes: one module per plane behind one protocol (``_base``)."""
