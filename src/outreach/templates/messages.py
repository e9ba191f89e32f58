"""Every sentence the mails and pages say, in Vietnamese and English; the language a
request asks for (Accept-Language, RFC 9110), Vietnamese when it asks for neither."""

from __future__ import annotations

from typing import Any, Literal

Language = Literal["vi", "en"]
LANGUAGES: tuple[Language, ...] = ("vi", "en")
DEFAULT: Language = "vi"

MESSAGES: dict[str, dict[Language, str]] = {
    # inquiry-notify (to staff)
    "notify_subject": {
        "vi": "[{business}] Liên hệ mới từ {name}",
        "en": "[{business}] New inquiry from {name}",
    },
    "notify_heading": {"vi": "Liên hệ mới", "en": "New inquiry"},
    "notify_reply": {
        "vi": "Trả lời thư này để trả lời {name}.",
        "en": "Reply to this mail to answer {name}.",
    },
    "field_name": {"vi": "Tên", "en": "Name"},
    "field_email": {"vi": "Email", "en": "Email"},
    "field_phone": {"vi": "Điện thoại", "en": "Phone"},
    "field_subject": {"vi": "Chủ đề", "en": "Subject"},
    "field_message": {"vi": "Lời nhắn", "en": "Message"},
    "field_id": {"vi": "Mã liên hệ", "en": "Inquiry id"},
    "none": {"vi": "(không có)", "en": "(none)"},
    # inquiry-ack (to the visitor)
    "ack_subject": {
        "vi": "{business} đã nhận được lời nhắn của bạn",
        "en": "{business} received your message",
    },
    "hello": {"vi": "Xin chào {name},", "en": "Hello {name},"},
    "ack_body": {
        "vi": "Cảm ơn bạn đã liên hệ với {business}. Chúng tôi đã nhận được lời nhắn "
        "dưới đây và sẽ trả lời bạn sớm.",
        "en": "Thank you for contacting {business}. We received the message below and will "
        "answer you soon.",
    },
    "ack_not_you": {
        "vi": "Thư này được gửi tự động. Nếu bạn không gửi lời nhắn này, hãy bỏ qua thư.",
        "en": "This mail was sent automatically. If you did not send this message, ignore it.",
    },
    # subscribe-confirm
    "confirm_subject": {
        "vi": "Xác nhận đăng ký nhận bản tin của {business}",
        "en": "Confirm your subscription to {business}'s newsletter",
    },
    "confirm_body": {
        "vi": "Ai đó (hy vọng là bạn) vừa đăng ký địa chỉ {email} nhận bản tin của {business}.",
        "en": "Someone (hopefully you) subscribed {email} to {business}'s newsletter.",
    },
    "confirm_action": {
        "vi": "Bấm vào liên kết dưới đây để xác nhận. Liên kết có hiệu lực trong 72 giờ.",
        "en": "Follow the link below to confirm. It works for 72 hours.",
    },
    "confirm_button": {"vi": "Xác nhận đăng ký", "en": "Confirm my subscription"},
    "confirm_not_you": {
        "vi": "Nếu không phải bạn, hãy bỏ qua thư này: bạn sẽ không nhận thêm thư nào.",
        "en": "If it was not you, ignore this mail: you will not be mailed again.",
    },
    "automatic": {
        "vi": "Thư tự động của {business}.",
        "en": "An automatic mail from {business}.",
    },
    # pages
    "unsubscribe_title": {"vi": "Hủy đăng ký", "en": "Unsubscribe"},
    "unsubscribe_question": {
        "vi": "Hủy đăng ký nhận bản tin của {business} cho địa chỉ {email}?",
        "en": "Unsubscribe {email} from {business}'s newsletter?",
    },
    "unsubscribe_button": {"vi": "Hủy đăng ký", "en": "Unsubscribe"},
    "unsubscribed_title": {"vi": "Bạn đã hủy đăng ký", "en": "You are unsubscribed"},
    "unsubscribed_body": {
        "vi": "Địa chỉ {email} sẽ không nhận bản tin của {business} nữa.",
        "en": "{email} will no longer receive {business}'s newsletter.",
    },
    "confirm_title": {"vi": "Xác nhận đăng ký", "en": "Confirm your subscription"},
    "confirm_question": {
        "vi": "Xác nhận đăng ký nhận bản tin của {business} cho địa chỉ {email}?",
        "en": "Confirm the subscription of {email} to {business}'s newsletter?",
    },
    "confirm_page_button": {"vi": "Xác nhận", "en": "Confirm"},
    "confirmed_title": {"vi": "Đăng ký đã được xác nhận", "en": "Subscription confirmed"},
    "confirmed_body": {
        "vi": "Địa chỉ {email} sẽ nhận bản tin của {business}. Cảm ơn bạn!",
        "en": "{email} will receive {business}'s newsletter. Thank you!",
    },
    "invalid_title": {"vi": "Liên kết không còn hiệu lực", "en": "This link does not work"},
    "invalid_body": {
        "vi": "Liên kết này không đúng, đã hết hạn hoặc không còn dùng được.",
        "en": "This link is wrong, has expired or can no longer be used.",
    },
    "unavailable_title": {"vi": "Tạm thời không thực hiện được", "en": "Not possible right now"},
    "unavailable_body": {
        "vi": "Vui lòng thử lại sau ít phút.",
        "en": "Please try again in a few minutes.",
    },
}


def message(language: Language, key: str, **values: Any) -> str:
    return MESSAGES[key][language].format(**values)


def pick_language(accept_language: str | None) -> Language:
    """The first of our languages in Accept-Language by preference (q); Vietnamese when none
    is named (or only `*`)."""
    best: tuple[float, int, Language] | None = None
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().split("-", 1)[0]
        if primary not in LANGUAGES:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        language: Language = "vi" if primary == "vi" else "en"
        candidate = (-q, position, language)  # highest q, then the first named
        if best is None or candidate < best:
            best = candidate
    return best[2] if best is not None else DEFAULT
