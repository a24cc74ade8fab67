#!/usr/bin/python3
"""Service project, users, services and endpoints, and the service's member project/user, in one process.

Run with Debian's python3 (python3-keystoneclient). Idempotent: finds before it creates.
Env: MC_PASSWORD (admin and service users), MC_MEMBER_PASSWORD, MC_HOST.
"""
import os
import sys

from keystoneauth1 import session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client

HOST = os.environ.get("MC_HOST", "127.0.0.1")
PW = os.environ["MC_PASSWORD"]
MEMBER_PW = os.environ["MC_MEMBER_PASSWORD"]
REGION = "RegionOne"

SERVICES = [  # name, type, description, url
    ("glance", "image", "Image", f"http://{HOST}:9292"),
    ("nova", "compute", "Compute", f"http://{HOST}:8774/v2.1"),
    ("neutron", "network", "Networking", f"http://{HOST}:9696"),
    ("placement", "placement", "Placement", f"http://{HOST}:8778"),
]


def main():
    auth = v3.Password(auth_url=f"http://{HOST}:5000/v3", username="admin", password=PW, project_name="admin",
                       user_domain_id="default", project_domain_id="default")
    ks = client.Client(session=session.Session(auth=auth, timeout=30))
    domain = ks.domains.get("default")

    def project(name, desc):
        found = ks.projects.list(name=name, domain=domain)
        return found[0] if found else ks.projects.create(name, domain, description=desc)

    def user(name, pw, proj):
        found = ks.users.list(name=name, domain=domain)
        if found:
            ks.users.update(found[0], password=pw)
            return found[0]
        return ks.users.create(name, domain=domain, password=pw, default_project=proj)

    def role(name):
        found = ks.roles.list(name=name)
        return found[0] if found else ks.roles.create(name)

    admin_role, member_role = role("admin"), role("member")
    role("reader")
    service_project = project("service", "Service users")
    for name, stype, desc, url in SERVICES:
        u = user(name, PW, service_project)
        ks.roles.grant(admin_role, user=u, project=service_project)
        svc = [s for s in ks.services.list(type=stype) if s.name == name]
        svc = svc[0] if svc else ks.services.create(name, type=stype, description=desc)
        have = {(e.interface, e.url) for e in ks.endpoints.list(service=svc)}
        for iface in ("public", "internal", "admin"):
            if (iface, url) not in have:
                for e in ks.endpoints.list(service=svc, interface=iface):
                    ks.endpoints.delete(e)
                ks.endpoints.create(svc, url, interface=iface, region=REGION)
    # the service's own tenant: a project and a member user (what the web tier uses)
    hybrid = project("hybrid", "hybrid image-recognition service")
    member = user("hybrid", MEMBER_PW, hybrid)
    ks.roles.grant(member_role, user=member, project=hybrid)
    print("keystone: users, services, endpoints, project hybrid ready")


if __name__ == "__main__":
    sys.exit(main())
