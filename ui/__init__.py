"""The Gradio app around lstm_model: handlers (actions.py) and the page (layout.py)."""
