"""What only the relay knows, added to a browser event: the client (`client`), whether it is a
crawler (`bots`), and the event as the relay completes it (`browser_event`). Pure functions."""
