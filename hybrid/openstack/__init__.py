"""The stack's OpenStack side: the web-tier server on a private cloud, reached through its floating IP.

``session`` connects by cloud name and maps every openstacksdk / keystoneauth error to the project's tree;
``image``, ``compute`` and ``network`` hold the ``ResourceDriver`` adapters; ``stack`` plans and applies;
``remote`` delivers credentials and checks the service over SSH (only where the cloud is routable).
"""
