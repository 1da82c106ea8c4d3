"""Demo data for the reference scenarios in PRODUCT.md.

``manage.py loaddemo`` builds a medical-aesthetics group, a nutrition platform
and a retail chain through the bulk services, deterministically from a seed, so
that running it twice writes nothing the second time. Sizes are documented in
:mod:`subjects.demo.sizes`.
"""
