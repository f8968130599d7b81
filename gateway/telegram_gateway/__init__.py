"""Telegram gateway: Local Bot API updates into NATS JetStream, and messages back out."""

__version__ = "0.1.0"
SERVICE_NAME = "telegram-gateway"
