from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("runs", "0004_confirmations_become_decisions")]

    operations = [migrations.DeleteModel(name="Confirmation")]
