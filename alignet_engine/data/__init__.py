"""Importers and in-memory data types: image sets, human judgments, matrices, features."""
