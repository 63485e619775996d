"""Helpers shared by test folders (throwaway databases, …)."""
