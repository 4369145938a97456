"""Dashboard views, one module per page. Views are thin: they read through dashboard.queries
and act only through the verbs in <app>/actions.py."""
