"""The write side: the eventsourcing application and one command module per capability."""
