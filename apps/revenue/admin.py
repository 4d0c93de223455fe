from django.contrib import admin

from apps.revenue.models import RevenueTarget

admin.site.register(RevenueTarget)
