"""The rule language: parsing with validation (``parse``), SQL compilation (``compiler``)
and a plain-Python evaluator (``evaluator``), all over one typed tree (``nodes``).

docs/TAGS.md describes the language; the evaluator is the executable reference the
property tests hold the compiled SQL to.
"""
