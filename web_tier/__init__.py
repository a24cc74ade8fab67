"""The web tier: a Flask app served by gunicorn that answers image uploads with ``name:label``.

``create_app(settings)`` builds it; ``hybrid web`` serves it. See ``web_tier.app`` for the endpoints and
``web_tier.service`` for how a request travels (cache, single flight, bucket, queue, reply dispatcher).
"""
