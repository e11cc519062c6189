"""``plateau demo``'s simulated traffic: a carrier, agents' softphones and desks, and a small
outbound campaign, speaking real SIP (over UDP) and gRPC to the embedded platform."""
