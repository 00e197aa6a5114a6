"""The read side: projections that follow the notification log into their own tables."""
