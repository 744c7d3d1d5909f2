"""PAdES signatures with pyHanko: signing, validation, timestamps."""
