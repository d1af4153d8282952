"""Did the round help: scored evaluations, blind votes, the publish gate, reports, what to rank next."""
