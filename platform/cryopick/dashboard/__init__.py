"""Streamlit dashboard for self-training campaigns: MLflow -> tidy tables (``data``) -> figures
(``figures``); ``dashboard/app.py`` at the repository root only lays them out."""
