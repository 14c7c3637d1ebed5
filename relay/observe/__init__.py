"""What the relay tells its operator: counts (`metrics`), the event log (`eventlog`), the
debugger's ring of recent steps (`journal`), all fed by one `observer.Observer`."""
