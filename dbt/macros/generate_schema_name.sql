{#- Models land in the schema they name (staging, marts), not <target>_<schema>: analysts
    write `select * from marts.device_daily_activity`. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
