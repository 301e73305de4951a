"""``fedca leaderboard``: every method tuned the same way on validation, rerun on seeds, tabulated.

``config`` declares a leaderboard preset (``conf/leaderboard/*.yaml``), ``pipeline`` runs its
steps (Optuna search, reruns, table), resumable at every step, and ``table`` turns the reruns
into the README tables, the significance against the baseline and a plot.
"""
