from tests.test_http import *
def test_x(app, svc, world, doc, pending):
    before = audit_actions(svc)
    r = sign(doc, pending, pin="735102")
    print(r.status_code, audit_actions(svc)[len(before):])
