"""Promotion: the registry's champion, chosen by the promotion rule."""
