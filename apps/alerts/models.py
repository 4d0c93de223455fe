"""Alert channels (Telegram, Discord, generic JSON webhook) and the record of every delivery attempt.

Secrets (a Telegram bot token, a webhook URL whose path holds the token) are stored encrypted (Fernet under
HFT_SECRETS_KEY, apps/alerts/crypto.py) so the worker can send, but nothing renders them back: `__str__` omits
them, the admin shows "set" and allows no lookup on them, the dashboard form only says "set" and offers
"replace". Channels from the environment are not rows (see selectors).
"""

from django.conf import settings
from django.db import models

from apps.alerts.crypto import secret_decrypt, secret_encrypt


class AlertEvent(models.TextChoices):
    """What can raise an alert. `test` is the operator's "send a test alert" button."""

    FILL = "fill", "fills"
    AUTO_DISABLE = "auto_disable", "ghost auto-disabled"
    KILL_SWITCH = "kill_switch", "kill switch tripped / reset"
    FEED_DOWN = "feed_down", "feed down"
    # a live position's protective stop on the exchange was missing, moved, filled or could not be placed
    PROTECTIVE_STOP = "protective_stop", "live protective stop"
    TEST = "test", "test alert"


# Events a channel can subscribe to (a test is always delivered to the channel it was sent to).
SUBSCRIBABLE = [e.value for e in AlertEvent if e != AlertEvent.TEST]


class AlertChannel(models.Model):
    class Kind(models.TextChoices):
        TELEGRAM = "telegram", "Telegram bot"
        DISCORD = "discord", "Discord webhook"
        WEBHOOK = "webhook", "JSON webhook"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=64, unique=True)
    enabled = models.BooleanField(default=True)
    events = models.JSONField(default=list, blank=True)  # subset of SUBSCRIBABLE
    chat_id = models.CharField(max_length=64, blank=True)  # Telegram only; a target, not a secret
    # Telegram: the bot token; Discord / webhook: the full URL (its path carries the token). A Fernet token ("" for
    # none), read and written through `secret`; not editable, so no ModelForm (the admin's) ever carries it.
    secret_encrypted = models.TextField(blank=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=["telegram", "discord", "webhook"]),
                                   name="alert_channel_kind_valid"),
        ]

    def __str__(self) -> str:  # no secret, ever
        return f"{self.name} ({self.kind})"

    @property
    def secret(self) -> str:
        """The plain secret, decrypted on each read (only the worker needs it); raises crypto.SecretUnreadable
        when no key in HFT_SECRETS_KEY opens it. `AlertChannel(secret=...)` and assignment encrypt."""
        return secret_decrypt(self.secret_encrypted)

    @secret.setter
    def secret(self, value: str) -> None:
        self.secret_encrypted = secret_encrypt(value or "")

    @property
    def secret_set(self) -> bool:
        """What pages show ("set" / "not set"), without decrypting."""
        return bool(self.secret_encrypted)

    @property
    def key(self) -> str:
        return f"db:{self.pk}"


class AlertDelivery(models.Model):
    """One alert to one channel: what was sent and how each attempt went (the operator's audit of alerts).

    The task re-reads this row by id; `attempts_log` keeps one entry per attempt
    ({"n", "at", "http_status", "error", "retry_in"}) so a 500-then-200 story stays visible.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RETRYING = "retrying"
        SENT = "sent"
        FAILED = "failed"

    channel = models.ForeignKey(AlertChannel, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="deliveries")
    channel_key = models.CharField(max_length=32)  # "db:<id>" or "env:<kind>"
    channel_label = models.CharField(max_length=100)
    channel_kind = models.CharField(max_length=16, choices=AlertChannel.Kind.choices)
    event = models.CharField(max_length=16, choices=AlertEvent.choices)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    event_at = models.DateTimeField()  # when the event was emitted (UTC); the webhook's `ts`
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)  # of the last attempt
    error = models.TextField(blank=True)  # of the last attempt, secrets redacted
    next_retry_at = models.DateTimeField(null=True, blank=True)
    attempts_log = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["-created_at"], name="alert_delivery_recent")]
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"{self.event} -> {self.channel_label}: {self.status}"
