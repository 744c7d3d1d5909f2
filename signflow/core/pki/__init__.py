"""Key material: the service keys folder, physicians' wrapped keys, CRLs, the
PKCS#11 token, the time-stamping authority and the service seal."""
