"""Alert delivery task (queue `default`). Thin: one attempt through the service, Celery schedules the retries.

Takes the delivery id and re-reads the row; a delivery already sent or failed is a no-op, so a duplicate
or a redelivery after a lost worker (acks_late) does not send twice unless the first copy died between
the POST and the row update (at-least-once, stated in apps.alerts.services). The attempt itself is
apps.alerts.delivery; this module does not import apps.alerts.services (which enqueues this task).
"""

import logging

from celery import shared_task
from celery.exceptions import Retry
from django.conf import settings

from apps.alerts.delivery import AlertTransientError, alert_delivery_attempt, alert_delivery_fail
from apps.alerts.redact import RedactFilter

log = logging.getLogger(__name__)
log.addFilter(RedactFilter())  # a broker error or a traceback may hold a URL with its token or password


# soft limit above the worst case of one attempt (HTTP timeout, default 5 s) with room for the DB writes
@shared_task(bind=True, acks_late=True, ignore_result=True, soft_time_limit=30, time_limit=40)
def deliver_alert(self, delivery_id: int) -> str:
    max_retries = int(settings.HFT_ALERT_MAX_RETRIES)
    try:
        return alert_delivery_attempt(delivery_id=delivery_id, retries=self.request.retries, max_retries=max_retries)
    except AlertTransientError as exc:
        try:
            # the service computed the exponential backoff (and recorded it on the row); Celery waits it out
            raise self.retry(exc=exc, countdown=exc.retry_in, max_retries=max_retries)
        except Retry:
            raise
        except Exception as publish_error:  # the retry could not be queued (broker down): say so on the row
            log.warning("alert delivery %s: retry not scheduled: %s", delivery_id, publish_error)
            alert_delivery_fail(delivery_id=delivery_id, error=f"{exc}; retry not scheduled: {publish_error}")
            return "failed"
    except Exception as exc:  # a bug must not leave the row "queued" forever
        log.exception("alert delivery %s crashed", delivery_id)
        alert_delivery_fail(delivery_id=delivery_id, error=f"internal error: {type(exc).__name__}")
        return "failed"
