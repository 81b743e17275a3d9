{#- A SQL tuple literal of strings: ('a', 'b'). -#}
{% macro in_list(values) -%}
    ({%- for value in values -%}'{{ value }}'{%- if not loop.last -%}, {% endif -%}{%- endfor -%})
{%- endmacro %}
