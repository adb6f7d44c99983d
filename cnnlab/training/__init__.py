"""Training: the loop (Trainer), learning-rate schedules, optimizer groups, device choice, run assembly."""
