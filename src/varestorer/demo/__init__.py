"""The ``varestorer demo`` web page (Gradio, the ``demo`` extra); top layer, built on the public API only."""
