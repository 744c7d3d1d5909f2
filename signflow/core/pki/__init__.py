"""Key material: the service keys folder, physicians' wrapped keys, CRLs, the
PKCS#11 token, the time-stamping authority and the service seal."""

from signflow.core.pki import der

# Every CMS structure signflow signs, stamps or seals is encoded through here (pades
# and evidence import this package): asn1crypto is fixed before the first one.
der.install()
