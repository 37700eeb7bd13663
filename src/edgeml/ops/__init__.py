"""Operations: Prometheus service discovery for the fleet, and the single-node appliance (`edgeml up`)."""
