"""Broken variants of the broker for the negative controls (see replog_broken.py); put this
folder on ``PYTHONPATH`` to activate ``sitecustomize.py``. Never imported by the product."""
