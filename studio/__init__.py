"""Align Studio's engine: plain Python that the Gradio pages call. Never imports gradio."""
